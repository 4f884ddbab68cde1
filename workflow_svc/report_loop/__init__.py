"""After the review: official reports (HL7), status handoff, export to the PACS and drafts."""
