"""Extractive reader: finds the answer span in a retrieved passage, or says there is none."""
