-- Histogram of review_body word counts in bins of 10 words (bin_start = first count in the bin).
-- word_count() is a macro reviewpipe defines on the DuckDB connection; for Athena
-- (catalog.engine=athena) reviewpipe.aws.athena transpiles it to regexp_count(review_body, '\S+').
SELECT
    CAST(FLOOR(word_count(review_body) / 10.0) * 10 AS INTEGER) AS bin_start,
    COUNT(*) AS reviews
FROM reviews
WHERE review_body IS NOT NULL
GROUP BY CAST(FLOOR(word_count(review_body) / 10.0) * 10 AS INTEGER)
ORDER BY bin_start
