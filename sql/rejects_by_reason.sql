-- Quarantined rows per reject reason (the ingest stage never drops a row silently).
SELECT
    reject_reason,
    COUNT(*) AS rows_rejected
FROM rejects
GROUP BY reject_reason
ORDER BY rows_rejected DESC, reject_reason
