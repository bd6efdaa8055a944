-- Word-count statistics of review_body; word_count() counts runs of non-whitespace (RE2's \S+).
-- Written in DuckDB's dialect: word_count is a macro reviewpipe defines on the connection, and
-- quantile_cont is exact, with linear interpolation as pandas' quantile. For Athena
-- (catalog.engine=athena) reviewpipe.aws.athena transpiles them to regexp_count(review_body, '\S+')
-- and approx_percentile (approximate: Athena's medians may differ slightly).
WITH counted AS (
    SELECT word_count(review_body) AS words
    FROM reviews
    WHERE review_body IS NOT NULL
)
SELECT
    COUNT(*) AS reviews,
    AVG(CAST(words AS DOUBLE)) AS mean_words,
    quantile_cont(words, 0.5) AS median_words,
    quantile_cont(words, 0.9) AS p90_words,
    MIN(words) AS min_words,
    MAX(words) AS max_words
FROM counted
