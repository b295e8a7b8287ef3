"""Email alerts: the alert mailbox, parsing of SonicWall alert mail and matching to devices."""
