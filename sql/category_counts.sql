-- Reviews per product category (NULL: the category was missing in the source).
SELECT
    product_category,
    COUNT(*) AS reviews
FROM reviews
GROUP BY product_category
ORDER BY reviews DESC, product_category
