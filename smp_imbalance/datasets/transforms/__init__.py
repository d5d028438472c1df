"""Default albumentations recipes, one module per dataset.

Every recipe keeps pixel transforms on data scaled to [0, 1] and normalises last (albumentations
2.0.x clips float32 to [0, 1] in its brightness/noise/blur transforms), checks that per-channel
mean/std lists match the channel count (``A.Normalize`` silently reuses ``mean[0]`` otherwise), and
leaves ``ToTensorV2`` out: the datasets convert to tensors themselves.
"""
