"""Prior studies: the patient's earlier studies at the facility's PACS, found and retrieved."""
