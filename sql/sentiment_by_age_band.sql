-- Reviews per (age band, sentiment), with each sentiment's share of its band.
-- `age_bands` (band, band_order, lower_bound, upper_bound; right-open) is a small table built from
-- params `data.age_bands` by reviewpipe; for Athena reviewpipe.aws.athena turns it into a VALUES CTE.
-- Counting per age first keeps the range join tiny (ages x bands, not reviews x bands).
-- LEFT JOIN: an age outside every band shows up with age_band NULL instead of vanishing.
WITH per_age AS (
    SELECT age, sentiment, COUNT(*) AS reviews
    FROM reviews
    GROUP BY age, sentiment
)
SELECT
    b.band AS age_band,
    p.sentiment,
    CAST(SUM(p.reviews) AS BIGINT) AS reviews,
    CAST(SUM(p.reviews) AS DOUBLE) / SUM(SUM(p.reviews)) OVER (PARTITION BY b.band) AS share
FROM per_age AS p
LEFT JOIN age_bands AS b
    ON p.age >= b.lower_bound AND p.age < b.upper_bound
GROUP BY b.band, b.band_order, p.sentiment
ORDER BY b.band_order, p.sentiment
