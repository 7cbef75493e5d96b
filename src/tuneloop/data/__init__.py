"""Dataset sources, record formats, column mapping, flattening, validation and staging."""
