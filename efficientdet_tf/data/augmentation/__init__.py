"""Training augmentation in the official order: GridMask, AutoAugment / RandAugment policies, and
the flip, scale jitter and crop (`augment`)."""
