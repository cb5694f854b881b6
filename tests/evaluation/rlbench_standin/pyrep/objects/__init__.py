from pyrep.objects.vision_sensor import VisionSensor

__all__ = ["VisionSensor"]
