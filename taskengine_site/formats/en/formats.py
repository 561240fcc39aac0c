"""Date and time formats of the admin (Django's FORMAT_MODULE_PATH): ISO-like and to the second, as the
API writes them, instead of "Dec. 6, 2026, 2:43 p.m."."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
