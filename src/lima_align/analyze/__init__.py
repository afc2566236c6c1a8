"""What did alignment change: token shift, knowledge retention, in-context baseline, ablations, checkpoint selection."""
