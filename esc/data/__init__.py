"""Audio data: reading and validation, synthetic and packaged speech sets, the audiofolder layout."""
