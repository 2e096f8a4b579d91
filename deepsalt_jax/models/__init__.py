"""DeepSalt models (Flax Linen): encoder, SAU, teacher and student."""
from deepsalt_jax.models.deepsalt import DomainDiscriminator
from deepsalt_jax.models.deepsalt import init_student_from_teacher
from deepsalt_jax.models.deepsalt import Student
from deepsalt_jax.models.deepsalt import Teacher
from deepsalt_jax.models.encoder import RegressionHead
from deepsalt_jax.models.encoder import SpectralEncoder
from deepsalt_jax.models.sau import SpectralAdaptationUnit
