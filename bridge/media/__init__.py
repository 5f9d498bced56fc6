"""Media: what users send besides text (photos, files, voice notes, locations, contacts) and
what the bridge does with it — fetched from the platform by the channel's adapter, kept in the
bridge's own database, served to Parloa by signed URL, described in context items, voice notes
transcribed. The contract is in the README ("Media")."""
