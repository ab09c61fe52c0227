"""Analysis with infinite-width kernels: spectra, predicted generalisation (eigenlearning,
random-feature risk), training-free architecture scores and dataset distillation (KIP)."""
from widelimit.analysis.spectrum import Spectrum, decay_exponent, ntk_spectrum, plot_spectrum, spectrum
from widelimit.analysis.scores import (NTKScores, hutchpp, label_gradient_alignment, ntk_condition_number,
                                       ntk_scores, ntk_trace)
from widelimit.analysis.kip import KIPResult, class_targets, kip, krr_predict
from widelimit.analysis.rf_risk import RFEigenlearning, rf_eigenlearning
from widelimit.analysis.eigenlearning import (Eigenlearning, LearningCurve, eigenlearning,
                                              predict_learning_curve, solve_kappa, target_coefficients)

__all__ = ["Spectrum", "spectrum", "ntk_spectrum", "decay_exponent", "plot_spectrum",
           "Eigenlearning", "LearningCurve", "eigenlearning", "solve_kappa", "target_coefficients",
           "predict_learning_curve", "RFEigenlearning", "rf_eigenlearning",
           "NTKScores", "ntk_scores", "ntk_condition_number", "ntk_trace", "label_gradient_alignment", "hutchpp",
           "KIPResult", "kip", "krr_predict", "class_targets"]
