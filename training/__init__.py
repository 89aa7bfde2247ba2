"""CSV in, trained and exported LSTM/GRU models out, into a versioned model repository."""
