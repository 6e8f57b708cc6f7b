"""One module per command group; each parses arguments and calls library code."""
