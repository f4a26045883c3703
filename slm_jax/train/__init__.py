"""Training: loss, optimizer and schedule, train step, loop and run control, metrics."""
