DROP FUNCTION IF EXISTS appt_parse_legacy_timestamp(text);
