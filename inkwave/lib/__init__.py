"""Small helpers that need no domain and no app: time zones, money and time as people read
them, text made safe to store. Every app may import them; they import no app."""
