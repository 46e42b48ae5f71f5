-- appt_parse_legacy_timestamp has an EXCEPTION block (a subtransaction), which a parallel worker cannot
-- start ("cannot start subtransactions during a parallel operation"): it must not run in parallel plans.
ALTER FUNCTION appt_parse_legacy_timestamp(text) PARALLEL RESTRICTED;
