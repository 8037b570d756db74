"""Background sentences: what a question's similarity to unrelated text looks like.

The confidence's "gap" feature compares a hit's cosine with the question's cosine to the
next best passages. In a small corpus there are few or no other passages, so these
sentences, on topics far from any one corpus, stand in: the reference is the mean of the
best REFERENCE cosines among the other passages and these sentences together. The
feature then means the same from 1 passage to 100,000 (data, like bm25s's stopwords).
"""

from __future__ import annotations

BACKGROUND: tuple[str, ...] = (
    "今天下午天气晴朗，气温二十五度左右，适合外出散步。",
    "这家餐馆的红烧肉做得很地道，价格也不贵。",
    "他把旧自行车修好以后，每天骑车去上班。",
    "图书馆周末开放到晚上九点，借书需要带上借书证。",
    "比赛进行到最后一分钟，主队终于攻入了制胜一球。",
    "这款手机的电池续航时间比上一代长了两个小时。",
    "春节前后，火车站的客流量明显增加。",
    "她每天早上练习半个小时钢琴，已经坚持了三年。",
    "这座古桥建于明代，桥身由青石砌成。",
    "公司决定明年在南方开设一家新工厂。",
    "小区门口新开了一家水果店，草莓很新鲜。",
    "老师布置的作业是写一篇关于秋天的作文。",
    "熊猫主要以竹子为食，每天要花很长时间进食。",
    "这部电影讲述了一个普通家庭几代人的故事。",
    "程序运行时报错，原因是配置文件的路径写错了。",
    "周末我们去郊外爬山，山顶的风景非常美。",
    "The train to the coast leaves every hour from platform four.",
    "She painted the kitchen walls a pale shade of green last weekend.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Our team finished the quarterly report two days ahead of schedule.",
    "The museum's new exhibition features ancient pottery and coins.",
    "He forgot his umbrella and got soaked walking home in the rain.",
    "The software update fixes a bug that drained the battery overnight.",
    "The hiking trail follows the river for about ten kilometres.",
)
