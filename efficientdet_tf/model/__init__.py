"""The network: EfficientNet backbone, feature network (BiFPN), heads, and their assembly."""
