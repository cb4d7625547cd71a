"""Promotion: campaigns (the catalog's conventions), scores for the personalization system,
the exposures/clicks/conversions it reports back, and the promotion delivery report."""

# No ``from __future__ import annotations``: FastAPI must see the real schema classes.

from backbeat.api.routes.catalog import catalog_router
from backbeat.promotion import schemas
from backbeat.promotion.service import PROMOTION_CAMPAIGNS

campaigns_router = catalog_router(
    PROMOTION_CAMPAIGNS,
    "promotion-campaigns",
    schemas.PromotionCampaignCreate,
    schemas.PromotionCampaignUpdate,
    schemas.PromotionCampaignRead,
)

ROUTERS = [campaigns_router]
