-- Reviews per (age band, sentiment), with each sentiment's share of its band.
-- `age_bands` (band, band_order, lower_bound, upper_bound; right-open) is a small table built from
-- params `data.age_bands` by the explore stage; on Athena create it once (CREATE TABLE ... AS VALUES).
-- LEFT JOIN: an age outside every band shows up with age_band NULL instead of vanishing.
SELECT
    b.band AS age_band,
    r.sentiment,
    COUNT(*) AS reviews,
    CAST(COUNT(*) AS DOUBLE) / SUM(COUNT(*)) OVER (PARTITION BY b.band) AS share
FROM reviews AS r
LEFT JOIN age_bands AS b
    ON r.age >= b.lower_bound AND r.age < b.upper_bound
GROUP BY b.band, b.band_order, r.sentiment
ORDER BY b.band_order, r.sentiment
