"""Submit, follow, cancel and report on jobs; idempotency per technique; the job state machine."""
