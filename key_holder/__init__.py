"""The key holder of ``--privacy he`` studies (a role): its persistent record of what it agreed to decrypt."""
