"""The staff dashboard: live figures pushed over a WebSocket, trends read from the sample
rows (downsampled by the database), alert history and the status of each component."""
