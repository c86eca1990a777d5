"""The measures of data contract section 2, one module per family."""
