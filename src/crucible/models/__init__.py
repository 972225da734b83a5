"""Models of CRUCIBLE: cam, tokenizer, scvar."""
