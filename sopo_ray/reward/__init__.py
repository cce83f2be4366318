"""The reward model r(x, c) SoPo trains against: TMR-style contrastive text/motion encoders, score in [0, 1]."""

from sopo_ray.reward.tmr import TMRReward, load_reward, reward_from_payload
from sopo_ray.reward.training import train_reward

__all__ = ["TMRReward", "load_reward", "reward_from_payload", "train_reward"]
