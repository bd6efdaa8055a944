-- Reviews per (product category, sentiment), with each sentiment's share of its category.
SELECT
    product_category,
    sentiment,
    COUNT(*) AS reviews,
    CAST(COUNT(*) AS DOUBLE) / SUM(COUNT(*)) OVER (PARTITION BY product_category) AS share
FROM reviews
GROUP BY product_category, sentiment
ORDER BY product_category, sentiment
