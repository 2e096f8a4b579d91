"""What each method of benchmarks/compare is, as its report states it."""

DESCRIPTIONS = {
    "plsr": "PLSR (components by inner 5-fold CV) on the labelled pixels' "
            "satellite spectra",
    "rf": "random forest on the labelled pixels' satellite spectra",
    "plsr_lab": "PLSR on the training lab spectra resampled forward to the "
                "sensor's nominal bands, applied to the pixels (source-only "
                "chemometrics)",
    "coral_ridge": "CORAL (skada) aligning the resampled lab spectra to the "
                   "unlabelled pixels, then ridge regression (shallow DA)",
    "pooled_mlp": "one MLP (scikit-learn) on the resampled lab spectra and "
                  "the labelled pixels pooled (spiking)",
    "epo": "EPO (Roger et al. 2003): PLSR on the resampled lab spectra with "
           "the main directions of the paired samples' pixel - resampled lab "
           "differences projected out, applied to the pixels projected alike; "
           "directions (0-8) and components chosen on the labelled pixels by "
           "CV over whole training regions",
    "ds": "direct standardisation (Wang et al. 1991): a ridge map (penalty "
          "by GCV) of the paired samples' pixels onto their resampled lab "
          "spectra takes the pixels to lab space, where plsr_lab predicts",
    "source_only": "the teacher: the network trained on the lab spectra "
                   "resampled forward to the nominal bands, applied to the "
                   "pixels (no target data; with space=lab, the pixels go "
                   "back to the lab grid through the physics inverse)",
    "student": "DeepSalt: SAU + teacher-initialised encoder; regression, "
               "distillation, MMD alignment, SAU reconstruction",
    "selected": "DeepSalt as it ships: the ensemble of the default "
                "student and the candidates (configs/distill.py "
                "DEFAULT_CANDIDATES); where one of them beats it by more "
                "than one standard error of the RMSE on the labelled "
                "validation blocks (selection.pick), that one hedged with "
                "it (their mean in log1p EC)",
    "ensemble": "the mean (in log1p EC) of the default student and the "
                "candidates",
    "plain": "the network on the labelled pixels alone, from scratch",
    "finetune": "the teacher fine-tuned on the labelled pixels (pretrain "
                "then fine-tune)",
    "dann": "DANN: regression on the resampled lab spectra, gradient "
            "reversal against the unlabelled pixels; no labelled pixels",
    "dann_labels": "DANN with the labelled pixels' regression too",
    "no_sau": "DeepSalt with the SAU fixed at its start",
    "no_distill": "DeepSalt without distillation",
    "no_distill_pred": "DeepSalt distilling the teacher's features, not "
                       "its predictions",
    "fade_distill_pred": "DeepSalt with the teacher's predictions "
                         "distilled over the first half of the steps, "
                         "fading linearly to none",
    "no_align": "DeepSalt without domain alignment",
    "sau_prior": "DeepSalt with the SAU held near its start (w_sau_prior=1)",
    "layers": "DeepSalt distilling layer by layer (SmoothL1 per encoder "
              "block, the authors' weights 1.35/1.05[/0.65]) instead of "
              "the final features",
    "latent": "DeepSalt with the latent SAU (an encoder on the pixel "
              "projected into the teacher's feature space, InfoNCE on "
              "pairs) instead of the physics SAU",
    "latent_pretrain": "the latent SAU with its encoder pretrained as an "
                       "autoencoder on the pixels (300 steps) and kept as a "
                       "term (weight 0.1)",
    "library": "DeepSalt keeping the library in its regression: the lab "
               "spectra resampled to the bands beside the labelled pixels "
               "(w_source=1)",
    "latent_library": "the latent SAU and the library in the regression",
    "pooled": "the teacher fine-tuned on the library's resampled lab "
              "spectra and the labelled pixels pooled, each sample one vote "
              "(spiking; no SAU, distillation or alignment)",
    "pair_labels": "DeepSalt regressing the paired pixels on their lab "
                   "samples' measured EC too (w_pair_regression=1)",
    "coral": "DeepSalt with CORAL alignment instead of MMD",
    "adversarial": "DeepSalt with adversarial alignment instead of MMD",
    "teacher_lab": "REFERENCE, not a competitor: the teacher on the held-out "
                   "samples' lab spectra, which a scene does not have",
}
