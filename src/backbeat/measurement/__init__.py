"""Measurement: tracking events, the durable event log, and counting by IAB rules."""
