"""Multi-turn dialogue (LIMA section 6): conversations with a model, turn and conversation judging, the
Figure 7 report, and their commands (`converse`, `judge turns|conversations`, `dialogue train|eval|report`)."""
