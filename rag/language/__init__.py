"""Words, scripts, sentence ends and segmentation: one definition each, for every language."""
