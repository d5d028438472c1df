"""Pure tensor functions behind the losses (no ``nn.Module`` here), one module per family:

* :mod:`.acb` -- class-balanced squared error over bins of the target (ACB-MSE);
* :mod:`.masked` -- valid-pixel weighted reductions and the spectral angle;
* :mod:`.mining` -- batch-wise minority profiling and hard mining for the CRL.
"""
