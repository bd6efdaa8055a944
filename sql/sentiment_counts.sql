-- Reviews per sentiment (-1 negative, 0 neutral, 1 positive).
SELECT
    sentiment,
    COUNT(*) AS reviews
FROM reviews
GROUP BY sentiment
ORDER BY sentiment
