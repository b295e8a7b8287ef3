"""EDR polling: Defender, Intune and Graph security data into the platform's edr_* tables.

`normalize` turns Microsoft JSON into records, `merge` decides device identity and links,
`posture` computes the platform's score. All three are pure; `store` writes the database.
"""
