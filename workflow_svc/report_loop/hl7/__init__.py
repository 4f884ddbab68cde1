"""The HL7 v2 listener: ORU^R01 over MLLP, parsed, stored as received and acknowledged."""
