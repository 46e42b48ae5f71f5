DROP TABLE IF EXISTS migration_progress, calendar_capacity, calendar_availability, webhook_events,
    follow_up_tasks, appointment_status_changes, appointments, leads, workspace_secrets, workspaces CASCADE;
DROP TYPE IF EXISTS availability_source, appointment_source, appointment_status, meeting_booking_provider;
