"""Chinese personal names: a surname frequency table, given-name character pools by gender, and
the variant tables that name dirt draws on (traditional characters, homophone typos).

Frequencies follow the 2020 census surname ranking (the top 100 cover about 85% of people); the
weights are per mille, rounded. Every given-name character has at least one homophone, and most
of the frequent ones have a traditional form, so name dirt can be applied to almost every name.
"""

from __future__ import annotations

#: (surname, weight per mille), the most frequent first.
SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 71.5), ("李", 71.0), ("张", 67.0), ("刘", 54.0), ("陈", 45.0), ("杨", 32.0), ("赵", 22.0),
    ("黄", 22.0), ("周", 21.0), ("吴", 20.0), ("徐", 16.0), ("孙", 15.5), ("胡", 13.0), ("朱", 12.5),
    ("高", 12.0), ("林", 11.5), ("何", 11.5), ("郭", 11.5), ("马", 11.0), ("罗", 8.5), ("梁", 8.5),
    ("宋", 8.0), ("郑", 8.0), ("谢", 7.0), ("韩", 6.5), ("唐", 6.5), ("冯", 6.5), ("于", 6.5),
    ("董", 6.0), ("萧", 5.5), ("程", 5.5), ("曹", 5.5), ("袁", 5.0), ("邓", 5.0), ("许", 5.0),
    ("傅", 4.5), ("沈", 4.5), ("曾", 4.5), ("彭", 4.5), ("吕", 4.5), ("苏", 4.5), ("卢", 4.5),
    ("蒋", 4.5), ("蔡", 4.5), ("贾", 4.0), ("丁", 4.0), ("魏", 4.0), ("薛", 3.5), ("叶", 3.5),
    ("阎", 3.5), ("余", 3.5), ("潘", 3.5), ("杜", 3.5), ("戴", 3.0), ("夏", 3.0), ("钟", 3.0),
    ("汪", 3.0), ("田", 3.0), ("任", 3.0), ("姜", 3.0), ("范", 3.0), ("方", 3.0), ("石", 3.0),
    ("姚", 3.0), ("谭", 2.5), ("廖", 2.5), ("邹", 2.5), ("熊", 2.5), ("金", 2.5), ("陆", 2.5),
    ("郝", 2.5), ("孔", 2.5), ("白", 2.5), ("崔", 2.5), ("康", 2.5), ("毛", 2.5), ("邱", 2.0),
    ("秦", 2.0), ("江", 2.0), ("史", 2.0), ("顾", 2.0), ("侯", 2.0), ("邵", 2.0), ("孟", 2.0),
    ("龙", 2.0), ("万", 2.0), ("段", 2.0), ("雷", 2.0), ("钱", 2.0), ("汤", 2.0), ("尹", 1.5),
    ("黎", 1.5), ("易", 1.5), ("常", 1.5), ("武", 1.5), ("乔", 1.5), ("贺", 1.5), ("赖", 1.5),
    ("龚", 1.5), ("文", 1.5), ("刁", 0.5), ("穆", 0.5), ("齐", 1.0), ("边", 0.5), ("霍", 1.0),
)  # fmt: skip

#: Given-name characters used mostly for men.
GIVEN_MALE: str = (
    "伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆帅旭宁龙林阳博文晨轩泽睿志建国海东峰亮成新江永春光"
)

#: Given-name characters used mostly for women.
GIVEN_FEMALE: str = (
    "芳娜敏静丽艳娟霞秀英慧美琳玲红梅燕雪颖婷倩欣悦涵萱雨思佳嘉怡梦瑶洁丹萍玉兰凤晶莉娇琴云月彤"
)

#: Simplified character -> traditional form (name characters that differ).
TRADITIONAL: dict[str, str] = {
    # surnames
    "张": "張", "刘": "劉", "陈": "陳", "杨": "楊", "赵": "趙", "黄": "黃", "吴": "吳", "孙": "孫",
    "马": "馬", "罗": "羅", "郑": "鄭", "谢": "謝", "韩": "韓", "冯": "馮", "邓": "鄧", "许": "許",
    "吕": "呂", "苏": "蘇", "卢": "盧", "蒋": "蔣", "贾": "賈", "叶": "葉", "阎": "閻",
    "钟": "鍾", "谭": "譚", "邹": "鄒", "陆": "陸", "顾": "顧", "龙": "龍", "万": "萬", "钱": "錢",
    "汤": "湯", "贺": "賀", "赖": "賴", "龚": "龔", "齐": "齊", "边": "邊", "萧": "蕭",
    # given-name characters
    "伟": "偉", "强": "強", "军": "軍", "杰": "傑", "涛": "濤", "刚": "剛", "辉": "輝", "鹏": "鵬",
    "华": "華", "飞": "飛", "波": "波", "斌": "斌", "宁": "寧", "阳": "陽", "轩": "軒", "泽": "澤",
    "睿": "叡", "建": "建", "国": "國", "东": "東", "峰": "峯", "亮": "亮", "新": "新",
    "凯": "凱", "帅": "帥", "丽": "麗", "艳": "艷", "娟": "娟", "霞": "霞", "慧": "慧", "琳": "琳",
    "玲": "玲", "红": "紅", "梅": "梅", "燕": "燕", "颖": "穎", "婷": "婷", "倩": "倩", "欣": "欣",
    "悦": "悅", "涵": "涵", "萱": "萱", "梦": "夢", "瑶": "瑤", "洁": "潔", "凤": "鳳", "兰": "蘭",
    "莉": "莉", "娇": "嬌", "琴": "琴", "云": "雲", "静": "靜", "敏": "敏", "芳": "芳", "娜": "娜",
    "秀": "秀", "英": "英", "美": "美", "雪": "雪", "晶": "晶", "丹": "丹", "萍": "萍", "玉": "玉",
    "鑫": "鑫", "江": "江", "春": "春", "光": "光", "彤": "彤",
}  # fmt: skip
TRADITIONAL = {k: v for k, v in TRADITIONAL.items() if k != v}

#: Given-name character -> characters of the same reading typed by mistake (同音字).
HOMOPHONES: dict[str, str] = {
    "伟": "玮炜苇", "强": "蔷墙", "磊": "垒蕾", "军": "君钧均", "勇": "涌永", "杰": "洁捷", "涛": "滔韬",
    "明": "铭鸣", "超": "潮", "刚": "钢纲", "平": "萍坪", "辉": "晖徽", "鹏": "朋彭", "华": "桦骅",
    "飞": "菲妃", "鑫": "欣馨", "波": "博", "斌": "彬滨", "宇": "雨羽禹", "浩": "皓昊", "凯": "恺铠",
    "健": "建剑", "俊": "骏峻", "帆": "凡繁", "帅": "率", "旭": "序煦", "宁": "凝", "龙": "隆", "林": "琳霖",
    "阳": "洋扬", "博": "波柏", "文": "雯闻", "晨": "辰臣", "轩": "宣萱", "泽": "则", "睿": "瑞锐",
    "志": "智致", "建": "健剑", "国": "果", "海": "亥", "东": "冬栋", "峰": "锋丰", "亮": "谅", "成": "诚城",
    "新": "欣心", "江": "疆姜", "永": "勇泳", "春": "椿", "光": "广",
    "芳": "方坊", "娜": "纳", "敏": "闵", "静": "婧靖", "丽": "莉俪", "艳": "燕雁", "娟": "鹃涓", "霞": "侠",
    "秀": "绣", "英": "瑛莹", "慧": "惠蕙", "美": "媚", "琳": "林霖", "玲": "铃灵", "红": "宏鸿虹",
    "梅": "玫媚", "燕": "艳雁", "雪": "薛", "颖": "莹影", "婷": "亭庭", "倩": "茜", "欣": "馨新",
    "悦": "月越", "涵": "含晗", "萱": "轩宣", "雨": "宇语", "思": "斯丝", "佳": "嘉家", "嘉": "佳家",
    "怡": "仪宜", "梦": "孟", "瑶": "遥谣", "洁": "杰", "丹": "单", "萍": "平", "玉": "钰煜", "兰": "岚蓝",
    "凤": "风", "晶": "京菁", "莉": "丽俐", "娇": "姣", "琴": "芹勤", "云": "芸耘", "月": "悦", "彤": "桐童",
}  # fmt: skip


def traditional_variant(name: str) -> str | None:
    """``name`` with every character that has a traditional form converted, or None if none has."""
    out = "".join(TRADITIONAL.get(c, c) for c in name)
    return out if out != name else None


def homophone_variant(name: str, pick: int) -> str | None:
    """``name`` with one given-name character replaced by a homophone (``pick`` chooses which
    character and which homophone), or None if no given-name character has one."""
    positions = [i for i in range(1, len(name)) if name[i] in HOMOPHONES]
    if not positions:
        return None
    i = positions[pick % len(positions)]
    alternatives = HOMOPHONES[name[i]]
    return name[:i] + alternatives[(pick // len(positions)) % len(alternatives)] + name[i + 1 :]


def spaced_name(name: str, pick: int) -> str:
    """``name`` with a space between surname and given name (ASCII or ideographic space)."""
    return name[:1] + (" " if pick % 3 else "\u3000") + name[1:]
