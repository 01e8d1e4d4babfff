"""The detectors against ground truth: a simulated fleet with slow conditions injected, its
history collected as the detectors read it, and each detector scored (`linli bench detect`)."""
