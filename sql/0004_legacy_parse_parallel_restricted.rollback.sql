ALTER FUNCTION appt_parse_legacy_timestamp(text) PARALLEL SAFE;
