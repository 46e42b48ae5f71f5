-- Lenient timestamp parse for legacy `booked_slot` text (SPEC §5: unparseable → NULL).
-- Mirrors appt_pipeline.domain.timeparse.parse_timestamp_or_none: ISO-8601 only; no zone means UTC.
CREATE FUNCTION appt_parse_legacy_timestamp(raw text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    t text := btrim(raw);
BEGIN
    IF t IS NULL OR t !~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$' THEN
        RETURN NULL;
    END IF;
    IF t ~ '(Z|[+-]\d{2}(:?\d{2})?)$' AND t ~ 'T|\s' THEN
        RETURN t::timestamptz;
    END IF;
    RETURN t::timestamp AT TIME ZONE 'UTC';
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
