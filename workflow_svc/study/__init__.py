"""The study: its state machine, eligibility, the bus-event pipeline, stored findings and reads."""
