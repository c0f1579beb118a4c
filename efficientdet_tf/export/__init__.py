"""Export: a SavedModel (uint8 images in, detections out), TFLite files (float32, float16, int8)."""
