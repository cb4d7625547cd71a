"""The demo: a small advertiser book and a simulated day of listening, run end to end."""
