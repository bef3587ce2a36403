"""Every file format (and OCR) turned into sections of text with page and heading."""
