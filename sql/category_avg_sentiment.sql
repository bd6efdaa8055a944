-- Average sentiment per product category, most positive first.
SELECT
    product_category,
    AVG(CAST(sentiment AS DOUBLE)) AS avg_sentiment,
    COUNT(*) AS reviews
FROM reviews
GROUP BY product_category
ORDER BY avg_sentiment DESC, product_category
