"""Which model a name means (the catalog and its profiles), the device, encoders and decoders."""
