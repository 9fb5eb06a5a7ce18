"""Images: the catalog a caller sees, bytes arriving by upload or import."""
