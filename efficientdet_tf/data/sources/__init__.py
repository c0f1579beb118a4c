"""Dataset sources: what `pipeline.source_from_spec` reads (TFRecords, COCO JSON, Pascal VOC and CSV
folders, segmentation mask folders, the synthetic shapes), each a `base.Source`."""
