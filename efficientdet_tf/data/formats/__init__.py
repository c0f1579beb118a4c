"""The file formats of the data: annotation records, Pascal VOC XML, the official TFRecord layout,
images and segmentation masks."""
